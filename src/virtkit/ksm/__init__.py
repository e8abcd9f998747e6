"""KSM (kernel samepage merging): see what it saves, per host and per VM, and set it."""
