"""Fault-injection scenarios: nothing the pipeline acknowledged may be lost, nothing counted twice."""
