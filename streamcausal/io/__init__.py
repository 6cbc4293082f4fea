"""Data on disk: the Zarr run store (store.py) and recordings read chunk by chunk (recording.py).

Nothing is imported here, so that ``import streamcausal`` does not load zarr.
"""
