"""Reusable test harness: real peers on loopback, free ports, polled readiness.

- `orthanc`: Debian's Orthanc from a config dict (any plugins), REST helpers.
- `ohif`: the prebuilt OHIF viewer (npm `@ohif/app`, pinned) and one small same-origin
  HTTP server that serves it and proxies DICOMweb to Orthanc.
- `browser`: headless Debian Chromium driven by Selenium (WebGL via SwiftShader).
- `net`: free ports and polling.
"""
