"""`python -m radixlm.launch_server [SGLang-style flags]`: launches the radixlm server."""

if __name__ == "__main__":
    # Imported here, not at module level: the language package never loads the runtime eagerly.
    from radixlm.runtime.server import main

    main()
