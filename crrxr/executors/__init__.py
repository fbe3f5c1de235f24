"""crrxr.executors"""
