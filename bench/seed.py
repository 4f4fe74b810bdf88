"""Seeds a benchmark bucket on moto: COUNT small objects of SIZE bytes plus optional large ones.

Usage: seed.py BUCKET --small 2000 --small-size 4096 --medium 20 --medium-size 8388608 [--big-mib 1024]
"""
import argparse
import os
from concurrent.futures import ThreadPoolExecutor

import boto3

ap = argparse.ArgumentParser()
ap.add_argument("bucket")
ap.add_argument("--small", type=int, default=2000)
ap.add_argument("--small-size", type=int, default=4096)
ap.add_argument("--medium", type=int, default=20)
ap.add_argument("--medium-size", type=int, default=8 * 1024 * 1024)
ap.add_argument("--big-mib", type=int, default=0, help="one multipart object of this many MiB")
a = ap.parse_args()
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
s3.create_bucket(Bucket=a.bucket)
small = os.urandom(a.small_size)
with ThreadPoolExecutor(8) as ex:
    list(ex.map(lambda i: s3.put_object(Bucket=a.bucket, Key=f"small/{i:05d}", Body=small), range(a.small)))
    list(ex.map(lambda i: s3.put_object(Bucket=a.bucket, Key=f"medium/{i:03d}", Body=os.urandom(a.medium_size)),
                range(a.medium)))
if a.big_mib:
    part = 64 * 1024 * 1024
    up = s3.create_multipart_upload(Bucket=a.bucket, Key="big/object.bin")
    parts, left, n = [], a.big_mib * 1024 * 1024, 1
    while left > 0:
        size = min(part, left)
        r = s3.upload_part(Bucket=a.bucket, Key="big/object.bin", UploadId=up["UploadId"], PartNumber=n,
                           Body=os.urandom(size))
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
        left -= size
        n += 1
    s3.complete_multipart_upload(Bucket=a.bucket, Key="big/object.bin", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
print(f"seeded s3://{a.bucket}")
