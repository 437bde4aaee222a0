"""The screens of the batchtui app."""
