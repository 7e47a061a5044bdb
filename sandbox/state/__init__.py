"""The cluster's state and the rules every write meets, whoever makes it (the API, a controller, a
scenario): the object store, the resource catalogue, selectors, defaulting and validation, the
PATCH flavours, deletion with garbage collection, and the API's errors and timestamps."""
