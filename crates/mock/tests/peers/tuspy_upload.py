"""Uploads one file to a tus server with tuspy (an independent tus client).

Usage: tuspy_upload.py ENDPOINT FILE CHUNK_SIZE
The Authorization header comes from the environment (IDB_TUS_AUTH), never the
command line. Prints the upload's URL on stdout; exits 2 when tuspy is missing.
"""

import os
import sys

try:
    from tusclient import client
except ImportError as e:
    print(f"tuspy is not installed: {e}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    endpoint, path, chunk_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tus = client.TusClient(endpoint, headers={"Authorization": os.environ["IDB_TUS_AUTH"]})
    uploader = tus.uploader(
        file_path=path,
        chunk_size=chunk_size,
        metadata={"filename": os.path.basename(path)},
        # tuspy then sends a sha1 Upload-Checksum with every PATCH.
        upload_checksum=True,
    )
    uploader.upload()
    print(uploader.url)


if __name__ == "__main__":
    main()
