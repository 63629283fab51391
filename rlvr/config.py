"""Configuration: pydantic models, one per concern (layer L0).

Each default lives once, on its field; derived values are properties; cross-field checks raise an
error that names the key and the fix.  (Filled in by the trainer issue.)
"""
