"""The default policy files and their JSON Schema, shipped inside the wheel as package data."""
