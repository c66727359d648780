"""Non-intrusive load monitoring: appliance power from the whole-house mains reading."""
