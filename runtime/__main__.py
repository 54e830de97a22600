from radixlm.runtime.cli import main

main()
