"""Node declarations: the declarative schema, the classic-class adapter, /object_info."""
