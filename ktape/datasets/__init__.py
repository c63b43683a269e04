"""Daily dataset files: names, manifests and storage, shared by the build job (datasetd),
the API that lists and sells them (queryd) and the file server (datasetd).

Why in the shared floor: the three meet only through the files and their manifests; one
reading of a name or a manifest keeps them from drifting apart.
"""
