"""crrxr.simulate"""
