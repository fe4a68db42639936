# The project's dependencies baked on Ray's GPU image, so that a new node only pulls an image.
#
#   docker build -t REGISTRY/ssl-priors:2.60.0-py311-cu128 .
#   docker push REGISTRY/ssl-priors:2.60.0-py311-cu128
#   then set docker.image in cluster.yaml to that name (README, "A baked image").
#
# The base is the image cluster.yaml names (tests/test_cluster_yaml.py keeps the two the same).
# Only the dependencies live in the image: the code reaches every node through cluster.yaml's
# file_mounts, and its setup_commands' `pip install -e` then finds every requirement satisfied.
FROM rayproject/ray:2.60.0-py311-cu128

# The requirements are read from pyproject.toml itself, so the image cannot drift from it.
COPY --chown=ray:users pyproject.toml /tmp/ssl-priors/pyproject.toml
RUN python -c "import tomllib; project = tomllib.load(open('/tmp/ssl-priors/pyproject.toml', 'rb'))['project']; print('\n'.join(project['dependencies']))" > /tmp/ssl-priors/requirements.txt \
    && pip install --no-cache-dir -r /tmp/ssl-priors/requirements.txt \
    && rm -rf /tmp/ssl-priors

# Every process in the container uses the cluster's token (cluster.yaml passes it with --env too).
ENV RAY_AUTH_MODE=token
