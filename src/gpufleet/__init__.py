"""gpufleet: the system of record and planner for a GPU fleet shared by several entities."""

__version__ = "0.1.0"
