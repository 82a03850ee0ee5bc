"""Training-time machinery: optimizer wrappers/constructors and hooks."""
