"""TLS for mqtts://: TLS 1.2 or later, the broker's hostname checked, optional client certificate.

Never insecure by default. `LINEWATCH_MQTT__TLS_INSECURE=true` disables verification and is logged at
error level at every start, so nobody leaves it on by accident.
"""

from __future__ import annotations

import ssl

from daemon.logs import get_logger
from daemon.settings import MqttSettings

log = get_logger("linewatch.tls")


def build_tls_context(settings: MqttSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_cert_file:
        context.load_cert_chain(
            str(settings.tls_cert_file), str(settings.tls_key_file) if settings.tls_key_file else None
        )
    if settings.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.error("tls_verification_disabled", variable="LINEWATCH_MQTT__TLS_INSECURE",
                  risk="anyone on the network can impersonate the broker and read every event")
    return context
