"""crrxr.plot"""
