{
  "targets": [
    {
      "target_name": "vsock",
      "sources": ["native/vsock.c", "native/sockdiag.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
