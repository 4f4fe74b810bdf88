# Sourced by the bench scripts: the stand-ins behind bench/latency_proxy.py, one port per
# service (blob 20000, queue 20001, table 20002, S3 20050).
#
#   start_proxy LATENCY_MS COUNTS_FILE   starts it in the background; its pid is in $proxy
#   $proxied_cs, $proxied_s3             the connection string and S3 endpoint through it

# Azurite's published development account key (not a secret).
azurite_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
proxied_cs="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$azurite_key;BlobEndpoint=http://127.0.0.1:20000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:20001/devstoreaccount1;TableEndpoint=http://127.0.0.1:20002/devstoreaccount1;"
proxied_s3=http://127.0.0.1:20050

start_proxy() {
  .tools/venv/bin/python bench/latency_proxy.py --latency-ms "$1" --counts "$2" \
    --map 20000:10000:blob --map 20001:10001:queue --map 20002:10002:table --map 20050:5000:s3 &
  proxy=$!
  sleep 1
}
