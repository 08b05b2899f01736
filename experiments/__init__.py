"""Experiments that measure whether the product does its job; one command each (`make experiments`)."""
