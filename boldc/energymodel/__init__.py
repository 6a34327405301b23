"""The energy model of SPEC §6: hardware descriptions and the tiling/dataflow model."""
