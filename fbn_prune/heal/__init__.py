"""heal"""
