"""The shared core, the bottom layer: config loading and its errors, the inventory's schema,
metric definitions, the E-model and the wire formats both sides speak. Imports nothing else
of wardready."""
