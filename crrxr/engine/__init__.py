"""crrxr.engine"""
