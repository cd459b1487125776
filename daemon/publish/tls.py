"""TLS for mqtts://: TLS 1.2 or later, the broker's hostname checked, optional client certificate.

Never insecure by default. `LINEWATCH_MQTT__TLS_INSECURE=true` disables verification and is logged at
error level at every start, so nobody leaves it on by accident.
"""

from __future__ import annotations

import ssl

from daemon.logs import get_logger
from daemon.settings.mqtt import MqttSettings, tls_context

log = get_logger("linewatch.tls")


def build_tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """Raises TlsFilesError (exit 2) when a file checked at start-up has been replaced by one OpenSSL refuses."""
    context = tls_context(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.error("tls_verification_disabled", variable="LINEWATCH_MQTT__TLS_INSECURE",
                  risk="anyone on the network can impersonate the broker and read every event")
    return context


def tls_failure_hint(reason: str, settings: MqttSettings, *, after_handshake: bool) -> str:
    """What to check for the TLS failures met first in the field; "" when OpenSSL's words say it already.

    `reason` is the failure text (OpenSSL's, through Python's ssl module), either from connect(), which does
    the handshake, or from the link closing after the handshake but before CONNACK (`after_handshake`).
    """
    text = reason.lower()
    cut = any(s in text for s in ("connection reset", "eof occurred", "unexpected eof", "wrong version number"))
    if not settings.tls_cert_file and (
        "certificate required" in text or "handshake failure" in text or (after_handshake and cut)
    ):
        # TLS 1.3 finishes the client's side of the handshake before the broker checks our certificate; a
        # broker that wants one may then just close the link (mosquitto does) instead of sending an alert.
        return ("the broker closed the link over TLS: it probably requires a client certificate; set "
                "LINEWATCH_MQTT__TLS_CERT_FILE and LINEWATCH_MQTT__TLS_KEY_FILE")
    if "unable to get local issuer certificate" in text or "self-signed certificate in" in text:
        return "the broker's certificate is not signed by a CA in LINEWATCH_MQTT__TLS_CA_FILE (or the system store)"
    if cut and not after_handshake:
        return "the TLS handshake was cut off: is this port a TLS listener? mqtts:// needs one, mqtt:// is plain"
    return ""
