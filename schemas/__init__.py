"""The contract between Interlock's services: events, the tool catalogue and
subject names. Depends on msgspec alone (and the standard library)."""
