"""crrxr.io"""
