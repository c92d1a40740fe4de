"""Tests that run only on a real Ascend NPU (all marked ``npu``; skipped elsewhere).

They reuse the emulation suite's scenarios with emulation off, so that the same checks run on
hardware. ``scripts/hardware_report.sh`` runs them and prints a report to paste into an issue.
"""
