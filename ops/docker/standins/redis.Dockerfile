# Stand-in for redis:7, for a machine that reaches no image registry: Debian bookworm's Redis 7.0.
FROM genq-standin/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/*
# The official image builds Redis with protected mode off (the container's network is its
# boundary) and runs it in /data: the same here.
RUN printf '#!/bin/sh\nexec /usr/bin/redis-server "$@" --protected-mode no\n' >/usr/local/bin/redis-server \
 && chmod +x /usr/local/bin/redis-server && mkdir /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server"]
