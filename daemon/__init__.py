"""linewatch: edge inspection daemon (camera -> YOLO -> defect events over MQTT)."""

__version__ = "0.2.0"
