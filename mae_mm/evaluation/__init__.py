"""(filled by later modules)"""
