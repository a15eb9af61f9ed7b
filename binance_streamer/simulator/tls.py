"""TLS for the simulator: Binance is reached only over ``wss://`` and
``https://``, so the simulator serves both by default, with a throw-away
certificate authority made at start (trustme) or a certificate given to it.

The recorder is told to trust the authority with its ``ca_file`` setting,
the way a user trusts a private CA or a corporate TLS proxy."""

import os
import ssl
import tempfile

CA_FILE = "simulator-ca.pem"


class Certificates:
    """The server's TLS context and the PEM file a client must trust."""

    def __init__(self, certfile=None, keyfile=None, directory=None):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tmp = None
        if certfile:                 # a given certificate: clients trust its chain
            self.context.load_cert_chain(certfile, keyfile)
            self.ca_file = certfile
            return
        import trustme
        ca = trustme.CA(organization_name="binance_streamer simulator")
        ca.issue_cert("127.0.0.1", "localhost", "::1").configure_cert(self.context)
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="binance-sim-ca-")
            directory = self._tmp.name
        os.makedirs(directory, exist_ok=True)
        self.ca_file = os.path.join(directory, CA_FILE)
        ca.cert_pem.write_to_path(self.ca_file)

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
