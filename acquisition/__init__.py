"""Devices and streams: BrainFlow boards, LSL inlets/outlets, XDF recording and replay, files."""
