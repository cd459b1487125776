"""Real-service test harness for linewatch.

Everything here drives real processes (mosquitto, a GStreamer RTSP server, the
daemon itself) or real sockets. Nothing is mocked: a failure test that passes
against a fake broker proves little about the broker the daemon meets in the field.
"""
