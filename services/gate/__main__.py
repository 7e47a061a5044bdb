from services.gate.service import main

main()
