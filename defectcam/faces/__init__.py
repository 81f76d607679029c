"""The faces: each turns its own input (a Nuclio event, an HTTP request, a cvat-sdk frame)
into the request contract, calls the serving layer and answers in its own format."""
