"""Anonymization at the sensor: the whole frame -> pose -> face box -> student -> frame pipeline in integers.

`reference.py` is the definition (a host reference the firmware's src/app/tk_frame.c mirrors bit for bit),
`config.py` derives its constants from a quantized pose model and a quantized student and writes them as C
data, `frames.py` makes real test frames, and `bench.py` runs it on a board or under QEMU
(`toolkit bench --pipeline`).
"""
