"""jaxserve.modeling"""
