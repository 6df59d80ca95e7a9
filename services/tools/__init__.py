"""Tools for people: look at a node running knd (events, status, topology)."""
