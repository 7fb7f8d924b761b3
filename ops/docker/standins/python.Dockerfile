# Stand-in for python:3.11-slim, for a machine that reaches no image registry: Debian bookworm's
# Python 3.11 in a venv on PATH, so that `python` and `pip` work as in the official image.
FROM genq-standin/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# pip as the build machine has it: its local wheels (pip's find-links there, copied in by
# standins.sh; possibly none) and the system's certificates, which include the machine's own CA.
COPY wheels/ /opt/wheels/
RUN printf '[global]\nfind-links = /opt/wheels\ncert = /etc/ssl/certs/ca-certificates.crt\ndisable-pip-version-check = 1\n' \
    > /etc/pip.conf
CMD ["python3"]
