"""crrxr.fit"""
