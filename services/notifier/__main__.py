from services.notifier.service import main

main()
