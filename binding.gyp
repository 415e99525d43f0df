{
  "targets": [
    {
      "target_name": "portstream",
      "sources": ["<!@(ls -1 native/*.c)"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
