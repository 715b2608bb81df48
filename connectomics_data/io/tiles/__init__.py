"""Huge volumes stored as 2D image tiles described by a PyTC tile JSON (mosaics per slice)."""
