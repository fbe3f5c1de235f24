"""crrxr.core"""
