#!/bin/sh
# Serves a directory over HTTP as a daemon, on the address this SSH session came in on, and waits
# until it answers. Usage: serve.sh DIRECTORY PORT
set -eu
dir=$1
port=$2
# SSH_CONNECTION is "client-address client-port server-address server-port".
set -- $SSH_CONNECTION
address=$3
log="$HOME/web.log"
setsid nohup python3 -m http.server "$port" --bind "$address" --directory "$dir" \
	>"$log" 2>&1 </dev/null &
echo $! >"$HOME/web.pid"
tries=0
until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
	"http://$address:$port/" 2>/dev/null; do
	tries=$((tries + 1))
	if [ "$tries" -ge 50 ]; then
		echo "the server did not answer; its log:" >&2
		cat "$log" >&2
		exit 1
	fi
	sleep 0.2
done
echo "serving $dir at http://$address:$port/"
