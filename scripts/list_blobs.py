"""Lists a container on the local Azurite with sizes, content types and provenance metadata.

Signs a 5-minute read/list account SAS with Azurite's public development key.
"""
import base64
import datetime
import hashlib
import hmac
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
container = sys.argv[1]
se = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
f = {"sv": "2022-11-02", "ss": "b", "srt": "sco", "sp": "rl", "se": se, "spr": "https,http"}
to_sign = "\n".join(["devstoreaccount1", f["sp"], f["ss"], f["srt"], "", se, "", f["spr"], f["sv"], "", ""])
f["sig"] = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
url = (f"http://127.0.0.1:10000/devstoreaccount1/{container}?restype=container&comp=list&include=metadata&"
       + urllib.parse.urlencode(f))
root = ET.parse(urllib.request.urlopen(url)).getroot()
print(f"{'bytes':>10}  {'content-type':<16} {'verified from s3 etag':<36} name")
for b in root.iter("Blob"):
    p, m = b.find("Properties"), b.find("Metadata")
    etag = m.findtext("s3sync_etag") if m is not None else ""
    print(f"{p.findtext('Content-Length'):>10}  {p.findtext('Content-Type') or '':<16} {etag or '':<36} {b.findtext('Name')}")
