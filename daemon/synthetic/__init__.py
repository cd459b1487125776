"""The synthetic production line: a seeded conveyor scene that carries its own ground truth, for the demo, the
tests, the benchmarks and training. Its parameters (params.py), the parts and their defects as drawn
(parts.py), the generator and its truth (line.py). Cameras reach it as `synthetic://line?…`
(daemon/sources/synthetic.py); nothing here knows about cameras."""
