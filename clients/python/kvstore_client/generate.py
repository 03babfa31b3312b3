"""Regenerates kvstore_client/_generated from the repository's proto/kvstore.proto.

Run from anywhere with grpcio-tools installed (pip install 'kvstore-client[generate]'):

    python -m kvstore_client.generate [path/to/proto/dir]

The generated modules are committed, so installing the package needs only grpcio.
"""

import pathlib
import sys


def main(argv: list[str]) -> int:
    from grpc_tools import protoc  # only needed to regenerate

    here = pathlib.Path(__file__).resolve().parent
    proto_dir = pathlib.Path(argv[1]) if len(argv) > 1 else here.parents[2] / "proto"
    proto = proto_dir / "kvstore.proto"
    if not proto.is_file():
        print(f"no kvstore.proto in {proto_dir}", file=sys.stderr)
        return 2
    out = here / "_generated"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto),
        ]
    )
    if code != 0:
        return code
    # grpc_tools writes `import kvstore_pb2`; the package needs a relative import.
    stub = out / "kvstore_pb2_grpc.py"
    text = stub.read_text()
    stub.write_text(text.replace("import kvstore_pb2 as", "from . import kvstore_pb2 as"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
