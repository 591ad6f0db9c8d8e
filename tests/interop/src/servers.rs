//! Starting the independent authorization servers on 127.0.0.1 (port 0).
