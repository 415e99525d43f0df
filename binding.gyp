{
  "targets": [
    {
      "target_name": "vsock",
      "sources": ["native/vsock.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
